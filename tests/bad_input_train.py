"""Bad input to `python -m tune_lm.train`."""

import pytest
import torch
from bad_input_kit import (
    GOOD_CORPUS,
    TINY_WEIGHTS,
    Case,
    corpus,
    torch_bytes,
    train,
)

CASES = [
    train("train-zero-epochs", ["--epochs", "0"], ("--epochs",)),
    train("train-save-over-a-corpus-file", ["--data", "corpus", "--save", "corpus/train.txt"],
          ("--save corpus/train.txt", "not a model checkpoint"),
          {f"corpus/{name}": text for name, text in GOOD_CORPUS.items()}),  # fmt: skip
    train("train-save-over-notes", ["--save", "notes.txt"], ("--save notes.txt", "overwritten"),
          {"notes.txt": "my notes\n"}),  # fmt: skip
    train("train-metrics-over-a-model", ["--metrics-json", "weights.pt"],
          ("--metrics-json weights.pt", "not a metrics file"), {"weights.pt": b"PK\x03\x04"}),
    train("train-save-is-metrics", ["--save", "out.json", "--metrics-json", "./out.json"],
          ("same file",)),
    train("train-negative-lr", ["--lr", "-1"], ("--lr",)),
    train("train-bad-decoder", ["--decoder", "foo"], ("--decoder", "invalid choice")),
    train("train-infinite-lr", ["--lr", "inf"], ("--lr", "finite")),
    train("train-negative-bptt", ["--bptt", "-5"], ("--bptt",)),
    train("train-dropout-one", ["--dropout", "1"], ("--dropout",)),
    train("train-tied-sizes", ["--emsize", "16", "--nhid", "8", "--tied"], ("nhid == emsize",)),
    train("train-tied-adaptive", ["--tied", "--decoder", "adaptive"], ("decoder='full'",)),
    train("train-graph-adaptive", ["--cuda-graph", "--decoder", "adaptive"],
          ("cuda_graph=True needs decoder='full'",)),  # fmt: skip
    train("train-bad-cutoffs", ["--adaptive-cutoffs", "50", "10"], ("adaptive_cutoffs",)),
    train("train-not-an-int", ["--batch-size", "ten"], ("--batch-size", "invalid int")),
    train("train-bad-device", ["--device", "gpu"], ("device",)),
    train("train-unknown-flag", ["--learning-rate", "1"], ("--learning-rate",)),
    train("train-data-missing-folder", ["--data", "nowhere"], ("nowhere",)),
    train("train-data-no-valid", ["--data", "corpus"], ("valid.txt",), corpus(valid=None)),
    train(
        "train-data-empty-train", ["--data", "corpus"], ("train.txt is empty",), corpus(train="")
    ),  # fmt: skip
    train(
        "train-data-blank-test",
        ["--data", "corpus"],
        ("test.txt has no words",),
        corpus(test="\n \n"),
    ),  # fmt: skip
    train(
        "train-data-nul-byte",
        ["--data", "corpus"],
        ("valid.txt", "NUL byte"),
        corpus(valid=b"\x00"),
    ),  # fmt: skip
    train(
        "train-data-not-utf8",
        ["--data", "corpus"],
        ("train.txt", "line 1", "UTF-8"),
        corpus(train=b"caf\xe9 au lait\n"),
    ),
    train("device-dash", ["--device", "-cuda"], ("--device", "-cuda", "cuda:N")),
    train("train-emsize-beyond-memory", ["--emsize", "1000000000000"],
          ("emsize 1000000000000", "needs at least", "GiB free")),  # fmt: skip
    # outputs that would only fail after training: checked before it starts
    train("train-save-is-a-folder", ["--save", "."], ("--save", "is a folder")),
    train("train-cutoffs-without-adaptive", ["--adaptive-cutoffs", "10", "20"],
          ("--adaptive-cutoffs", "--decoder adaptive")),  # fmt: skip
    Case("train-device-cuda-before-the-corpus", "train", ["--data", "corpus", "--device",
         "cuda"], ("device='cuda'", "no CUDA GPU"), corpus(),  # no token cache left
         marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),)),
    train("train-save-new-folder-dot", ["--save", "newdir/."], ("--save", "is a folder")),
    train("train-save-under-a-file", ["--save", "notes.txt/model.pt"], ("--save", "not a folder"),
          {"notes.txt": "x"}),  # fmt: skip
    train("train-save-unwritable", ["--save", "/proc/model.pt"], ("--save", "cannot write")),
    train("train-metrics-is-a-folder", ["--metrics-json", "."], ("--metrics-json", "is a folder")),
    train("train-metrics-under-a-file", ["--metrics-json", "notes.txt/m.json"],
          ("--metrics-json", "not a folder"), {"notes.txt": "x"}),  # fmt: skip
    # new-user round of stop 29
    # Output files: only what the flag itself writes is replaced, and only a regular file.
    train("train-save-over-a-foreign-checkpoint", ["--save", "pretrained.pt"],
          ("--save pretrained.pt", "written by tune_lm"),
          {"pretrained.pt": torch_bytes({"resnet": TINY_WEIGHTS})}),  # fmt: skip
    train("train-metrics-over-a-foreign-json", ["--metrics-json", "settings.json"],
          ("--metrics-json settings.json", "written by tune_lm"),
          {"settings.json": '{"retries": 3}\n'}),  # fmt: skip
    train("train-save-into-a-new-folder", ["--save", "newdir/"], ("--save newdir/", "folder")),
    train("train-metrics-to-stdout", ["--metrics-json", "-"], ("--metrics-json -", "file path")),
    train("train-seed-beyond-torch", ["--seed", "18446744073709551616"], ("--seed",)),
]
