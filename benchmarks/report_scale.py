"""How large and how fast is the HTML report of 10 models × 40 attacks (issue: under 2 MB, open in under 2 s)?

The result files are **synthetic** — random per-example masks in the real schema, each model's profile copied
from a shipped result — because only the size of the page and the browser's work matter here, not the numbers.
The page is built with ``midbench report``'s code, then opened five times in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, through Selenium) and timed from navigation start to the end of the load
event (``PerformanceNavigationTiming``), which includes parsing, layout of every inline SVG and the sorting
script's set-up.

    python benchmarks/report_scale.py [MODELS] [ATTACKS]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHIPPED = Path(__file__).resolve().parents[1] / "results" / "mnist5k" / "runs" / "mnist5k"


def synthetic_results(folder: Path, models: int, attacks: int, seed: int = 0) -> None:
    """``models`` white-box results of ``attacks`` attacks each (the first 4 known, AutoAttack last)."""
    template_path = next(SHIPPED.glob("pgd-at__whitebox__*.json"))
    template = json.loads(template_path.read_text(encoding="utf-8"))
    with np.load(template_path.with_suffix(".npz")) as saved:
        arrays = {key: saved[key] for key in saved.files}
    n = int(template["data"]["n_examples"])
    generator = np.random.default_rng(seed)
    out = folder / "runs" / "mnist5k"
    out.mkdir(parents=True)
    base_row = next(row for row in template["attacks"] if row["id"].startswith("pgd-linf"))
    autoattack = next(row for row in template["attacks"] if row["id"].startswith("autoattack"))
    for model in range(models):
        strength = generator.uniform(0.2, 0.9)
        robust = generator.random((n, attacks)) < strength * generator.uniform(0.5, 1.0, attacks)
        rows = [{**base_row, "id": f"attack-{j:02d}@1", "split": "known" if j < 4 else "unknown",
                 "robust_accuracy": float(robust[:, j].mean())} for j in range(attacks - 1)]
        rows.append({**autoattack, "robust_accuracy": float(robust[:, -1].mean())})
        run_id = f"model-{model:02d}__whitebox__20261201T000000Z-{model:06x}"
        document = {**template, "run_id": run_id, "attacks": rows, "per_example": f"{run_id}.npz",
                    "checkpoint": {**template["checkpoint"], "name": f"model-{model:02d}",
                                   "sha256": f"{model:064x}"}}
        (out / f"{run_id}.json").write_text(json.dumps(document), encoding="utf-8")
        np.savez(out / f"{run_id}.npz", **{**arrays, "robust": robust,
                                           "attacks": np.array([row["id"] for row in rows])})


def main() -> None:
    models = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    attacks = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from midbench.reporting.html import write_report

    folder = Path(tempfile.mkdtemp(prefix="midbench-report-scale-"))
    try:
        synthetic_results(folder, models, attacks)
        started = time.perf_counter()
        path, skipped = write_report(folder)
        built = time.perf_counter() - started
        assert not skipped, skipped
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
        loads = []
        try:
            for _ in range(6):  # the first load warms the browser up and is not counted
                driver.get("about:blank")
                driver.get(path.as_uri())
                loads.append(driver.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"))
            figures = len(driver.find_elements("css selector", "figure.plot svg"))
        finally:
            driver.quit()
        counted = loads[1:]
        print(f"{models} models × {attacks} attacks: report {path.stat().st_size / 2**20:.2f} MiB, {figures} figures, "
              f"built in {built:.1f} s; browser load (ms) median {statistics.median(counted):.0f}, "
              f"min {min(counted):.0f}, max {max(counted):.0f} over {len(counted)} loads")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
