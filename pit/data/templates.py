"""The two prompt formats of PIT, in one place: the policy reads `x`; the improver reads `(x, y_ref)`."""

from __future__ import annotations

import string
from dataclasses import dataclass

from pit.errors import ConfigError


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


@dataclass(frozen=True)
class Templates:
    """Format strings; responses are appended to the rendered input as they are (no separator added)."""

    policy: str = "{prompt}"
    improver: str = "{prompt}{reference}\n\nImproved response:"

    def __post_init__(self) -> None:
        for name, template, expected in (("policy", self.policy, {"prompt"}),
                                         ("improver", self.improver, {"prompt", "reference"})):
            if _fields(template) != expected:
                raise ConfigError(f"templates.{name}={template!r} must use exactly the fields {sorted(expected)}")

    def policy_input(self, prompt: str) -> str:
        """Input of `M_P`: the prompt `x`."""
        return self.policy.format(prompt=prompt)

    def improver_input(self, prompt: str, reference: str) -> str:
        """Input of `M_PIT` and `R_PIT`: the prompt `x` and a reference response `y_ref` to improve on."""
        return self.improver.format(prompt=prompt, reference=reference)
