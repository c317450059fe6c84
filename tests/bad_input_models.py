"""Bad input to the commands that use a trained model or an experiment: generate,
evaluate and report."""

import dataclasses

from bad_input_kit import (
    LONELY_STATE,
    MODEL_PT,
    SUMMARY,
    Case,
    corpus,
    evaluate,
    generate,
    report,
    sampling,
    torch_bytes,
)

CASES = [
    generate("generate-checkpoint-missing", ["--checkpoint", "nope.pt"], ("nope.pt", "exist")),
    generate("generate-model-bare-name", ["--model", "tune_lm-quick"],
             ("--model tune_lm-quick", "models:/tune_lm-quick/VERSION")),  # fmt: skip
    generate("generate-checkpoint-folder", ["--checkpoint", "."], ("--checkpoint", "folder")),
    generate("generate-checkpoint-foreign-pt", ["--checkpoint", "random.pt"],
             ("random.pt", "not a tune_lm checkpoint"), {"random.pt": torch_bytes([1, 2])}),
    generate("generate-checkpoint-truncated", ["--checkpoint", "model.pt"], ("model.pt", "cut off"),
             {"model.pt": MODEL_PT[: len(MODEL_PT) // 2]}),
    generate("generate-checkpoint-text", ["--checkpoint", "notes.txt"], ("notes.txt",),
             {"notes.txt": "not a model\n"}),
    generate("generate-trial-state-alone", ["--checkpoint", "train_state.pt"],
             ("train_state.pt", "search.json", "checkpoints/best/model.pt"),
             {"train_state.pt": LONELY_STATE}),
    sampling("temperature", "0"),
    sampling("temperature", "-1"),
    sampling("temperature", "nan"),
    sampling("temperature", "inf"),
    sampling("temperature", "1e-310"),
    sampling("seed", "-1"),
    sampling("seed", str(2**64)),
    generate("generate-model-no-store", ["--model", "models:/tune_lm-quick/1"],
             ("--model", "mlflow.db", "nothing was created")),
    evaluate("evaluate-model-no-store", ["--model", "models:/tune_lm-quick/1"],
             ("--model", "mlflow.db", "nothing was created")),
    evaluate("evaluate-checkpoint-truncated", ["--checkpoint", "model.pt"], ("model.pt",),
             {"model.pt": MODEL_PT[:100]}),
    evaluate("evaluate-checkpoint-folder", ["--checkpoint", "."], ("--checkpoint", "folder")),
    report("report-mlflow-no-store", ["--mlflow", "quick"], ("--mlflow quick", "mlflow.db")),
    report("report-summary-truncated", ["exp"], ("exp/summary.json", "not complete JSON"),
           {"exp/summary.json": SUMMARY[:70]}),
    report("report-summary-wrong-types", ["exp"], ("exp/summary.json: trial 1", "lr [1]"),
           {"exp/summary.json": '{"space": {"parameters": {"lr": {}}, "fixed": {}}, "trials": '
            '[{"trial_id": "a", "lr": [1], "status": "completed", "best_val_ppl": 3}]}'}),
    report("report-bad-by", ["exp", "--by", "nhid", "emsize"], ("--by emsize",),
           {"exp/summary.json": SUMMARY}),
    report("report-by-a-derived-option", ["exp", "--by", "nhid"],
           ("--by nhid", "nhid takes lr's value (derived), so --by lr groups the same trials"),
           {"exp/summary.json": SUMMARY.replace('"fixed": {"nhid": 16}',
                                                '"fixed": {}, "derived": {"nhid": "lr"}')}),
    report("report-out-onto-an-experiment",  # its summary and study would be replaced
           ["--mlflow", "quick", "--tracking-uri", "sqlite:///mlflow.db", "--out", "exp"],
           ("--out exp already holds files", "new or empty folder"),
           {"exp/summary.json": "{}\n", "exp/optuna_study.journal": "x\n"}),  # fmt: skip
    report("report-out-for-a-folder", ["exp", "--out", "x"], ("--out",),
           {"exp/summary.json": SUMMARY}),
    generate("generate-model-empty", ["--model", ""], ("--model ''", "empty", "--checkpoint")),
    evaluate("evaluate-model-an-experiment-folder", ["--model", "runs/good"],
             ("--model runs/good", "not an MLflow model", "models:/tune_lm-NAME/VERSION"),
             {"runs/good/summary.json": SUMMARY}),  # fmt: skip
    # --smoke's model knows the synthetic corpus's words: another corpus is refused before
    # it is trained (it was refused after training it).
    dataclasses.replace(Case("evaluate-smoke-on-another-corpus", "evaluate",
                             ["--smoke", "--data", "corpus"],
                             ("--smoke: 50 words", "--data corpus"), corpus()),
                        may_leave=("cache",)),  # fmt: skip
]
