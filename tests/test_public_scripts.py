"""`repro verify-determinism` on public training scripts not written here, unchanged
(tests/scripts/public/README.md: pytorch/examples' word_language_model and regression, BSD 3-Clause),
both of which update their parameters by hand, without torch.optim: twenty steps identical, a resume
verdict, and a planted difference found at the step and the tensor where it enters. The difference is
planted around the script, never in it: a bash wrapper that passes a clock seed, a launcher that
seeds torch before running a script that never seeds itself (torch draws its default seed at random
in every process: the unseeded script is the planted difference)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.test_exec import PY, SCRIPTS

pytestmark = pytest.mark.example  # real runs of public scripts, a minute each: make example
from tests.test_verdicts import verify

PUBLIC = SCRIPTS / "public" / "pytorch-examples"
# Runs a script after seeding torch (the script itself never does): `python -c SEEDED SCRIPT ARGS...`.
SEEDED = "import runpy, sys, torch; torch.manual_seed(0); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A small corpus in WikiText-2's layout (train.txt, valid.txt, test.txt under --data)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(50)]
    root = tmp_path / "wikitext"
    root.mkdir()
    for name, lines in (("train", 300), ("valid", 40), ("test", 40)):
        text = "".join(" " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + " \n" for _ in range(lines))
        (root / f"{name}.txt").write_text(text)
    return root


def word_lm(corpus: Path) -> list:
    return [PY, PUBLIC / "word_language_model" / "main.py", "--data", corpus, "--emsize", "16", "--nhid", "16",
            "--nlayers", "1", "--bptt", "8", "--batch_size", "4", "--epochs", "1", "--log-interval", "5",
            "--save", "{output}/model.pt"]


def trace(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]


def test_word_language_model_hand_sgd_twenty_steps_identical_then_a_clock_seed_and_a_resume(tmp_path, corpus):
    code, result, err = verify(tmp_path, "--steps", "20", "--", *word_lm(corpus))
    assert code == 0 and result["identical"] and result["compared"]["steps"] == 20, err
    lines = trace(tmp_path / "v" / "run-1")
    assert len(lines) == 20 and {t["update"] for t in lines} == {"outside torch.optim"}
    assert "encoder.weight" in lines[0]["tensors"] and lines[0]["lr"] is None

    wrapped = ["bash", "-c", 'exec "$@" --seed "$(date +%N)"', "wrapper", *word_lm(corpus)]  # argparse: the last --seed wins
    code, result, err = verify(tmp_path, "--steps", "5", "--", *wrapped, name="clock")
    assert code == 1, err
    assert result["first_difference"]["step"] == 1 and result["first_difference"]["field"] == "params_before"
    assert result["first_difference"]["tensor"] == "encoder.weight" and "first differing tensor encoder.weight" in result["sentence"]

    code, result, err = verify(tmp_path, "--resume-at", "10", "--resume-args", "--lr 20", "--", *word_lm(corpus), name="resume")
    assert code == 0 and result["exact"] and result["resumed_from"] == 0, err  # it has no resume: it starts over
    assert "loaded no checkpoint" in result["sentence"]


def test_regression_never_seeded_differs_at_its_initialisation_and_identical_once_seeded_from_outside(tmp_path):
    script = PUBLIC / "regression" / "main.py"
    code, result, err = verify(tmp_path, "--steps", "5", "--", PY, script, name="as-is")
    assert code == 1 and result["first_difference"]["step"] == 1, err  # torch's default seed differs in every process
    assert result["first_difference"]["field"] == "params_before" and result["first_difference"]["tensor"] == "weight"

    code, result, err = verify(tmp_path, "--steps", "20", "--", PY, "-c", SEEDED, script)
    assert code == 0 and result["identical"] and result["compared"]["steps"] == 20, err
    lines = trace(tmp_path / "v" / "run-1")
    assert lines[0]["tensors"].keys() == {"weight", "bias"} and {t["update"] for t in lines} == {"outside torch.optim"}

    code, result, err = verify(tmp_path, "--steps", "30", "--resume-at", "10", "--resume-args", "again", "--", PY, "-c", SEEDED,
                               script, name="resume")
    assert code == 0 and result["exact"] and result["resumed_from"] == 0, err  # no checkpoint: it starts over


def test_word_language_model_parted_by_its_environment_names_the_op_and_the_scripts_line(tmp_path, corpus):
    """The same public script, unchanged, its second run with oneMKL on another code path
    (--against-env MKL_CBWR=AVX2 against the COMPATIBLE branch the tests pin): the step verdict says
    the setting changes the bits, and --ops names a kernel whose inputs agree and output differs, in
    the forward, at a line of the script's own code (main.py or model.py), not of torch."""
    bigger = [*word_lm(corpus)]
    for option, value in (("--emsize", "128"), ("--nhid", "128"), ("--batch_size", "16"), ("--bptt", "16")):
        bigger[bigger.index(option) + 1] = value
    code, result, err = verify(tmp_path, "--steps", "2", "--ops", "--against-env", "MKL_CBWR=AVX2", "--", *bigger)
    assert code == 1 and result["sentence"].startswith("MKL_CBWR=AVX2 changes the bits: differs at step 1"), err
    first = result["ops"]["first"]
    assert first["kind"] == "kernel" and first["a"]["phase"] == "forward", result["ops"]["verdict"]
    where = first["a"]["at"]
    assert "word_language_model/" in where and where.rsplit("/", 1)[-1].split(":")[0] in ("main.py", "model.py"), where
    assert f"{first['a']['op']} (forward" in result["sentence"] and where in result["sentence"]
