"""The README's MLflow screenshots, taken from a real search's store (run by hand).

Needs Playwright and a Chromium (neither is a tune_lm dependency)::

    apt-get install chromium && python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    mlflow server --backend-store-uri sqlite:///$PWD/mlflow.db --port 5055 &
    /tmp/pw/bin/python docs/screenshots.py http://127.0.0.1:5055 quick docs/images

It opens the experiment's run list with the search's run expanded (its trials, named by
their settings) and the registered model's version 1 (its source run and description),
and writes ``mlflow_runs.png`` and ``mlflow_model_version.png``.
"""

import json
import sys
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def experiment_id(base: str, name: str) -> str:
    url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
    with urllib.request.urlopen(url) as answer:
        return json.load(answer)["experiment"]["experiment_id"]


def main(base: str, name: str, out: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 700})
        page.goto(f"{base}/#/experiments/{experiment_id(base, name)}/runs")
        page.wait_for_timeout(6000)
        close = page.get_by_role("button", name="Close")
        if close.count():  # the assistant's side panel
            close.first.click()
        run = page.get_by_role("link", name=name, exact=True).last  # the search's run
        box = run.bounding_box()
        page.mouse.click(box["x"] - 36, box["y"] + box["height"] / 2)  # its [+]: the trials
        page.wait_for_timeout(2000)
        after = page.get_by_text("Created", exact=True).first.bounding_box()  # next column
        edge_x, middle_y = after["x"] - 13, after["y"] + after["height"] / 2
        page.mouse.move(edge_x, middle_y)  # widen the name column: the names are the point
        page.mouse.down()
        page.mouse.move(edge_x + 170, middle_y, steps=10)
        page.mouse.up()
        page.wait_for_timeout(1000)
        page.screenshot(path=f"{out}/mlflow_runs.png")
        page.goto(f"{base}/#/models/tune_lm-{name}/versions/1")
        page.wait_for_timeout(6000)
        page.screenshot(path=f"{out}/mlflow_model_version.png")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
