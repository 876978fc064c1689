"""Data layer: the synthetic oracle and generator, the HH-RLHF / TL;DR / jsonl parsers, bad input, splits."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from helpers import FIXTURES, HH_SLICE, ROOT, compose_config

from pit.data import tldr
from pit.data.hh_rlhf import HHRLHFSource, split_transcript
from pit.data.hub import PARQUET_EXPORT
from pit.data.jsonl import JsonlSource, read_jsonl
from pit.data.schema import DataError
from pit.data.splits import split_examples
from pit.data.synthetic import SyntheticSource, score
from pit.data.templates import Templates
from pit.data.tldr import TLDRSource


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ---- synthetic ------------------------------------------------------------------------------------------------
PROMPT = "write 6 words with cat red sun without dog"


@pytest.mark.parametrize("response, expected", [
    ("cat red sun hat cup box", 1.0),                  # all 5 constraints
    ("cat red sun hat cup dog", 4 / 5),                # banned word present
    ("cat red hat cup box key", 4 / 5),                # one required word missing
    ("cat red sun hat cup", (4 + 0.5) / 5),            # one word short: half credit on length
    ("cat red sun", (4 + 0.0) / 5),                    # three short: no length credit
    ("", 1 / 5),                                       # only "dog absent" holds
])
def test_oracle_hand_values(response: str, expected: float) -> None:
    assert score(PROMPT, response) == pytest.approx(expected)


def test_oracle_order_constraint() -> None:
    prompt = "write 5 words with cat red in order without dog"
    assert score(prompt, "cat hat red cup box") == 1.0
    assert score(prompt, "red hat cat cup box") == pytest.approx(4 / 5)


def test_oracle_rejects_foreign_prompt() -> None:
    with pytest.raises(ValueError, match="not a synthetic prompt"):
        score("tell me a joke", "no")


def test_synthetic_is_deterministic_and_ordered() -> None:
    a, b = SyntheticSource(n_pairs=500, seed=3).load(), SyntheticSource(n_pairs=500, seed=3).load()
    assert a.examples == b.examples
    assert SyntheticSource(n_pairs=500, seed=4).load().examples != a.examples
    assert len({e.prompt for e in a.examples}) == 500
    chosen = [score(e.prompt, e.chosen) for e in a.examples]
    rejected = [score(e.prompt, e.rejected) for e in a.examples]
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))
    assert 0.55 < sum(chosen) / 500 < 0.7 and 0.3 < sum(rejected) / 500 < 0.45
    assert sum(c == 1.0 for c in chosen) / 500 < 0.15          # chosen rarely perfect: headroom above the data
    assert all(score(e.prompt, e.meta["perfect"]) == 1.0 for e in a.examples)
    assert all(e.meta["perfect"].split()[-1] == e.prompt.split(" without")[0].split()[-1] for e in a.examples)


def test_synthetic_slips_are_systematic_and_the_mode_of_the_chosen_data() -> None:
    """Each slip in about 65 % of chosen responses (so greedy SFT copies both), and the rejected response is the
    chosen one's edit: it keeps the chosen's slips."""
    examples = SyntheticSource(n_pairs=2000, seed=0).load().examples
    for slip in ("echo", "cut"):
        assert 0.6 < sum(slip in e.meta["slips"] for e in examples) / 2000 < 0.7
    banned = [e.prompt.split(" without ")[1].split()[0] for e in examples]
    echoed = [e for e, b in zip(examples, banned, strict=True) if "echo" in e.meta["slips"]]
    assert all(e.chosen.split()[0] == e.rejected.split()[0] == e.prompt.split(" without ")[1].split()[0]
               for e in echoed)


def test_synthetic_perfect_answer_is_unique_with_a_filler_and_random_without() -> None:
    from pit.errors import ConfigError

    for e in SyntheticSource(n_pairs=200, seed=0).load().examples:
        length, required = int(e.prompt.split()[1]), e.prompt.split(" with ")[1].split(" without ")[0].split()
        assert e.meta["perfect"].split() == required[:-1] + ["la"] * (length - 3) + required[-1:]
    free = SyntheticSource(n_pairs=200, seed=0, filler=None).load().examples
    assert len({tuple(w for w in e.meta["perfect"].split() if w not in e.prompt.split()) for e in free}) > 150
    assert all(score(e.prompt, e.meta["perfect"]) == 1.0 for e in free)
    with pytest.raises(ConfigError, match="filler='cat'"):
        SyntheticSource(filler="cat")


def test_synthetic_slips_by_hand() -> None:
    from pit.data.synthetic import _slip

    prompt = "write 7 words with cat red sun without dog owl"
    perfect = "cat hat red cup box key sun".split()
    assert score(prompt, " ".join(perfect)) == 1.0
    echo = _slip(perfect, {"echo"}, ["dog", "owl"], ["cat", "red", "sun"])
    assert echo == "dog cat red cup box key sun" and score(prompt, echo) == pytest.approx(5 / 6)
    cut = _slip(perfect, {"cut"}, ["dog", "owl"], ["cat", "red", "sun"])
    assert cut == "cat hat red cup box" and score(prompt, cut) == pytest.approx(4 / 6)
    both = _slip(perfect, {"echo", "cut"}, ["dog", "owl"], ["cat", "red", "sun"])
    assert both == "dog cat red cup box" and score(prompt, both) == pytest.approx(3 / 6)
    repeat = _slip(perfect, {"repeat"}, ["dog", "owl"], ["cat", "red", "sun"])
    assert repeat == "cat hat cat cup box key sun" and score(prompt, repeat) == pytest.approx(5 / 6)
    every = _slip(perfect, {"echo", "cut", "repeat"}, ["dog", "owl"], ["cat", "red", "sun"])
    assert every == "dog cat cat cup box" and score(prompt, every) == pytest.approx(2 / 6)


def test_synthetic_slip_choice() -> None:
    """`slips` picks which slips the annotators make; the rejected response keeps the chosen's; a typo is an error."""
    from pit.errors import ConfigError

    examples = SyntheticSource(n_pairs=1000, seed=0, slips=("echo", "cut", "repeat")).load().examples
    for slip in ("echo", "cut", "repeat"):
        assert 0.6 < sum(slip in e.meta["slips"] for e in examples) / 1000 < 0.7
    repeated = [e for e in examples if "repeat" in e.meta["slips"]]
    second = [e.prompt.split(" with ")[1].split()[1] for e in repeated]
    assert all(w not in e.chosen.split() and w not in e.rejected.split() for e, w in zip(repeated, second, strict=True))
    only = SyntheticSource(n_pairs=200, seed=0, slips=("repeat",)).load().examples
    assert {tuple(e.meta["slips"]) for e in only} == {(), ("repeat",)}
    with pytest.raises(ConfigError, match=r"unknown slips \['typo'\]"):
        SyntheticSource(slips=("echo", "typo"))
    with pytest.raises(ConfigError, match=r"rejected_corruptions=\[0\] must allow at least one"):
        SyntheticSource(rejected_corruptions=(0,))   # would loop forever on a chosen response with every slip


def test_synthetic_constructor_defaults_are_the_config_defaults() -> None:
    """conf/dataset/synthetic.yaml holds the embedded default; the constructor's defaults, which tests use, match it."""
    import inspect

    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "dataset" / "synthetic.yaml"))
    defaults = {name: p.default for name, p in inspect.signature(SyntheticSource).parameters.items()
                if p.default is not inspect.Parameter.empty}
    shared = sorted(set(defaults) & set(conf))
    assert len(shared) >= 12, shared
    assert {n: list(defaults[n]) if isinstance(defaults[n], tuple) else defaults[n] for n in shared} == \
        {n: conf[n] for n in shared}


# ---- HH-RLHF --------------------------------------------------------------------------------------------------
def test_split_transcript_takes_the_last_assistant_turn() -> None:
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine"
    assert split_transcript(text) == ("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:", " fine")
    assert split_transcript("no turns here") is None


def test_hh_real_slice(hh_slice: Path) -> None:
    data = HHRLHFSource(path=str(hh_slice)).load()
    assert len(data.examples) + sum(data.dropped.values()) == 2312
    assert len(data.examples) == 2303
    assert data.dropped == {"diverged_before_last_turn": 5, "empty_response": 4}
    for e in data.examples:
        assert e.prompt.endswith("\n\nAssistant:") and e.prompt.startswith("\n\nHuman:")
        assert e.chosen.strip() and e.rejected.strip() and e.chosen != e.rejected


def test_hh_smoke_default_path_is_the_slice_in_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`+experiment=hh_rlhf_smoke` reads data/hh-rlhf/ of the clone, nothing beside it, from any directory."""
    monkeypatch.delenv("PIT_HH_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    path = Path(compose_config(["+experiment=hh_rlhf_smoke"], tmp_path).dataset.path).resolve()
    assert path == HH_SLICE and path.is_relative_to(ROOT)
    assert (path.parent / "LICENSE").is_file() and (path.parent / "README.md").is_file()


def test_hh_counts_every_drop_reason(tmp_path: Path) -> None:
    p = "\n\nHuman: q\n\nAssistant:"
    rows = [{"chosen": p + " good", "rejected": p + " bad"},
            {"chosen": "\n\nHuman: a\n\nAssistant: x" + p + " y",
             "rejected": "\n\nHuman: b\n\nAssistant: z" + p + " w"},
            {"chosen": p + " same", "rejected": p + " same"},
            {"chosen": p + " ", "rejected": p + " bad"},
            {"chosen": "no assistant", "rejected": p + " bad"}]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    data = HHRLHFSource(path=str(path)).load()
    assert [(e.prompt, e.chosen, e.rejected) for e in data.examples] == [(p, " good", " bad")]
    assert data.dropped == {"diverged_before_last_turn": 1, "identical_responses": 1, "empty_response": 1,
                            "no_assistant_turn": 1}


@pytest.mark.parametrize("lines, message", [
    (['{"chosen": "a", "rejected": "b"}', '{"chosen": "a", '], r"hh.jsonl:2: invalid JSON"),
    (['{"chosen": "a"}'], r"hh.jsonl:1: field 'rejected': missing"),
    (['{"chosen": "a", "rejected": 3}'], r"hh.jsonl:1: field 'rejected': expected str, got int"),
    (['[1, 2]'], r"hh.jsonl:1: expected a JSON object"),
    (["", "  "], r"hh.jsonl: file is empty"),
])
def test_hh_bad_input_names_file_line_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_lines(tmp_path / "hh.jsonl", lines)
    with pytest.raises(DataError, match=message):
        HHRLHFSource(path=str(path)).load()


def test_encodings_name_the_line(tmp_path: Path) -> None:
    """A Latin-1 byte in a UTF-8 file names its line; a UTF-8 byte-order mark at the start is accepted."""
    good = b'{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yes", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}\n'
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + b'{"chosen": "caf\xe9", "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"mixed.jsonl:2: not valid UTF-8 \(byte 15 of the line\)"):
        HHRLHFSource(path=str(path)).load()
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + good)
    assert len(HHRLHFSource(path=str(bom)).load().examples) == 1


def test_missing_file_and_unreadable_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        HHRLHFSource(path=str(tmp_path / "nope.jsonl")).load()
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.jsonl.gz: cannot read file"):
        HHRLHFSource(path=str(bad)).load()


def test_hub_unreachable_says_how_to_use_a_local_file() -> None:
    with pytest.raises(DataError, match=r"hub:Anthropic/hh-rlhf\[train\].*dataset.path="):
        HHRLHFSource().load()


# ---- TL;DR and generic jsonl ----------------------------------------------------------------------------------
def test_tldr_fixture() -> None:
    data = TLDRSource(path=str(FIXTURES / "tldr_comparisons.jsonl")).load()
    assert data.dropped == {"identical_responses": 1}
    assert [e.chosen for e in data.examples] == [" My cat breaks my cups every morning.",
                                                 " New runner, knees hurt after each run.",
                                                 " Council extends tram to airport by 2030."]
    assert data.examples[1].rejected == " Running."
    assert data.examples[0].prompt == ("SUBREDDIT: r/pets\nTITLE: Cat vs cups\nPOST: My cat knocks cups off the table "
                                       "every morning and I am out of cups.\nTL;DR:")
    assert data.examples[2].prompt.startswith("TITLE: Tram extension\nPOST: The city council")


def test_tldr_bad_choice(tmp_path: Path) -> None:
    row = {"info": {"post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], "choice": 2}
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(row)])
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'choice'"):
        TLDRSource(path=str(path)).load()


GOOD_TLDR = {"info": {"post": "p", "title": "t", "subreddit": "s"}, "summaries": [{"text": "a"}, {"text": "b"}],
             "choice": 0}
WRONG_TYPES = [  # (loader, a row with one wrong-typed field, the field the error must name)
    ("tldr", {**GOOD_TLDR, "info": {**GOOD_TLDR["info"], "post": 42}}, "info.post"),
    ("tldr", {**GOOD_TLDR, "info": {**GOOD_TLDR["info"], "title": ["t"]}}, "info.title"),
    ("tldr", {**GOOD_TLDR, "info": {**GOOD_TLDR["info"], "subreddit": 7}}, "info.subreddit"),
    ("tldr", {**GOOD_TLDR, "summaries": [{"text": "a"}, {"text": 3}]}, "summaries[1].text"),
    ("tldr", {**GOOD_TLDR, "summaries": [{"text": "a"}, "b"]}, "summaries[1].text"),
    ("hh", {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": {"text": "x"}}, "rejected"),
    ("jsonl", {"q": {"text": 5}, "good": "a", "bad": "b"}, "q.text"),
]


@pytest.mark.parametrize(("loader", "row", "field"), WRONG_TYPES, ids=[f"{w[0]}-{w[2]}" for w in WRONG_TYPES])
def test_every_field_a_loader_reads_is_type_checked(tmp_path: Path, loader: str, row: dict, field: str) -> None:
    """A wrong-typed field, nested ones included, is named with its file and line, never read as text."""
    path = write_lines(tmp_path / "rows.jsonl", [json.dumps(row)])
    source = {"tldr": lambda: TLDRSource(path=str(path)), "hh": lambda: HHRLHFSource(path=str(path)),
              "jsonl": lambda: JsonlSource(str(path), prompt_field="q.text", chosen_field="good",
                                           rejected_field="bad")}[loader]()
    with pytest.raises(DataError, match=rf"rows.jsonl:1: field '{re.escape(field)}': expected str"):
        source.load()


def write_parquet(path: Path, jsonl: Path) -> Path:
    """The rows of a jsonl file as one parquet file (nested objects become parquet structs, as on the hub)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row for _, row in read_jsonl(jsonl)]), path)
    return path


def test_tldr_hub_reads_the_parquet_export_not_the_loading_script(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`datasets` >= 4 runs no loading scripts: TL;DR from the hub reads its parquet export (here a local copy)."""
    fixture = FIXTURES / "tldr_comparisons.jsonl"
    expected = TLDRSource(path=str(fixture)).load()
    assert PARQUET_EXPORT.format(name="openai/summarize_from_feedback", config="comparisons", split="train") == (
        "hf://datasets/openai/summarize_from_feedback@refs%2Fconvert%2Fparquet/comparisons/train/*.parquet")
    write_parquet(tmp_path / "openai/summarize_from_feedback/comparisons/train/0000.parquet", fixture)
    monkeypatch.setattr(tldr, "PARQUET_EXPORT", str(tmp_path / "{name}/{config}/{split}/*.parquet"))
    from_hub = TLDRSource().load()
    assert from_hub.examples == expected.examples and from_hub.dropped == expected.dropped
    assert from_hub.source == "tldr:hub:openai/summarize_from_feedback[train]"


def test_local_parquet_files_as_dataset_path(tmp_path: Path) -> None:
    """`dataset.path=<dir>/*.parquet` reads downloaded parquet files; a glob that matches nothing is one clear error."""
    fixture = FIXTURES / "tldr_comparisons.jsonl"
    write_parquet(tmp_path / "comparisons/train/0000.parquet", fixture)
    data = TLDRSource(path=str(tmp_path / "comparisons/train/*.parquet")).load()
    assert data.examples == TLDRSource(path=str(fixture)).load().examples
    with pytest.raises(DataError, match=r"missing/\*\.parquet: cannot read parquet files"):
        TLDRSource(path=str(tmp_path / "missing/*.parquet")).load()


def test_jsonl_custom_fields_and_nested(tmp_path: Path) -> None:
    rows = [{"q": "x1", "a": {"good": "y", "bad": "z"}}, {"q": "x2", "a": {"good": "y", "bad": "y"}}]
    path = write_lines(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    data = JsonlSource(str(path), prompt_field="q", chosen_field="a.good", rejected_field="a.bad").load()
    assert [(e.prompt, e.chosen, e.rejected) for e in data.examples] == [("x1", "y", "z")]
    assert data.dropped == {"identical_responses": 1}
    with pytest.raises(DataError, match=r"pairs.jsonl:1: field 'prompt': missing"):
        JsonlSource(str(path)).load()


def test_all_pairs_dropped_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pairs.jsonl", [json.dumps({"prompt": "x", "chosen": "y", "rejected": "y"})])
    with pytest.raises(DataError, match="no usable preference pairs.*identical_responses=1"):
        JsonlSource(str(path)).load()


# ---- splits and templates -------------------------------------------------------------------------------------
def test_split_by_prompt_is_disjoint_deterministic_and_proportional() -> None:
    examples = SyntheticSource(n_pairs=2000, seed=1).load().examples
    duplicated = examples + [type(e)(e.prompt, e.rejected, e.chosen) for e in examples[:200]]
    splits = split_examples(duplicated, val=0.1, test=0.1, judge=0.1)
    prompts = {name: {e.prompt for e in rows} for name, rows in splits.items()}
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not prompts[a] & prompts[b], (a, b)
    assert sum(len(r) for r in splits.values()) == 2200
    assert 0.6 < len(splits["train"]) / 2200 < 0.8 and all(100 < len(splits[n]) < 320 for n in ("val", "test", "judge"))
    assert split_examples(list(reversed(duplicated)), 0.1, 0.1, 0.1)["val"] == list(reversed(splits["val"]))
    with pytest.raises(ValueError, match="fractions"):
        split_examples(examples, 0.5, 0.3, 0.3)


def test_templates() -> None:
    t = Templates(policy="Q: {prompt}\nA:", improver="Q: {prompt}\nDraft:{reference}\nBetter:")
    assert t.policy_input("hi {x}") == "Q: hi {x}\nA:"
    assert t.improver_input("hi", " there") == "Q: hi\nDraft: there\nBetter:"
    with pytest.raises(ValueError, match="templates.improver"):
        Templates(improver="{prompt} only")


def test_synthetic_without_banned_words_and_capacity_error() -> None:
    from pit.errors import ConfigError

    data = SyntheticSource(n_pairs=50, n_required=2, n_banned=0, min_length=4, max_length=6).load()
    assert all("without" not in e.prompt for e in data.examples)
    assert all(score(e.prompt, e.chosen) > score(e.prompt, e.rejected) for e in data.examples)
    assert score("write 4 words with cat red", "cat red sun box") == 1.0
    with pytest.raises(ConfigError, match="allow 41 distinct prompts, fewer than n_pairs=500"):
        SyntheticSource(n_pairs=500, n_required=1, n_banned=0, min_length=5, max_length=5).load()


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "x", "chosen": "y", "rejected": null}\n', r"p.jsonl:1: field 'rejected': expected str, got NoneType"),
    (b'{"prompt": "x", "chosen": ["y"], "rejected": "z"}\n', r"p.jsonl:1: field 'chosen': expected str, got list"),
    (b'{"prompt": "x", "chosen": "y", "rejected": "z"}\n{"prompt": 1}\n', r"p.jsonl:2: field 'prompt': expected str"),
    ('{"prompt": "x", "chosen": "y", "rejected": "z"}\n'.encode("utf-16"), r"p.jsonl:1: not valid UTF-8"),
    (b'"just a string"\n', r"p.jsonl:1: expected a JSON object, got str"),
    (b"\n\n", r"p.jsonl: file is empty"),
])
def test_jsonl_malformed_inputs_name_file_line_field(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        JsonlSource(str(path)).load()


def test_jsonl_extra_fields_are_ignored_not_an_error(tmp_path: Path) -> None:
    row = {"prompt": "x", "chosen": "y", "rejected": "z", "id": 7, "meta": {"source": "s"}}
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(row)])
    assert [(e.prompt, e.chosen, e.rejected) for e in JsonlSource(str(path)).load().examples] == [("x", "y", "z")]
