"""Judges of response quality, held out from everything the policy and improver were trained on."""
