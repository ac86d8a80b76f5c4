"""A run's metrics: JSON rows appended to its log as training goes, optionally mirrored to an experiment tracker;
the ranking figures (Hits@k, MRR) of the linkers that rank candidate lists."""
import json
import logging
import os

import torch

from mel.errors import DataError
from mel.io.atomic import write_lines

logger = logging.getLogger(__name__)


class MetricsLog:
    """Rows of JSON appended as training goes. A training state records how many rows the log held when it was saved
    (`rows`), and a resumed run first cuts the log back to them (`truncate`): the resumed log equals an uninterrupted
    one, wherever the crash came.

    With a tracker (start_tracker) every row's numbers also go to TensorBoard / Weights & Biases at its step.
    """

    def __init__(self, path, tracker=None):
        self.path, self.tracker, self.rows = path, tracker, 0

    def append(self, row):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        line = json.dumps(row, allow_nan=False)  # NaN is not JSON: refused before the file is touched
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.rows += 1
        if self.tracker is not None:
            values = {k: v for k, v in row.items() if k not in ("step", "time") and isinstance(v, (int, float))
                      and not isinstance(v, bool)}
            self.tracker.log(values, step=row["step"])

    def close(self):
        if self.tracker is not None:
            self.tracker.end_training()

    def truncate(self, rows):
        """Keep the first `rows` rows (those logged before the training state being resumed was saved)."""
        kept = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line.rstrip("\n") for line in f if line.strip()][:rows]
        write_lines(self.path, kept)
        self.rows = len(kept)


def check_tracker(report_to):
    """--report_to names a tracker whose package is installed (checked before anything expensive)."""
    if report_to == "none":
        return
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    if not {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[report_to]():
        raise DataError(f"--report_to {report_to}: the {report_to} package is not installed; `pip install "
                        f"{report_to}`, or --report_to none (the metrics JSONL is written either way)")


def start_tracker(report_to, log_dir, run_name, config):
    """accelerate's experiment tracking for the metrics rows (--report_to); None for `none`, the offline default.
    Call it on the main process only: it alone logs."""
    if report_to == "none":
        return None
    from accelerate import Accelerator

    check_tracker(report_to)
    accelerator = Accelerator(log_with=report_to, project_dir=log_dir)
    accelerator.init_trackers(run_name, config={k: v for k, v in config.items()
                                                if isinstance(v, (int, float, str, bool))})
    return accelerator


def ranking_summary(ranks, ks):
    """Hits@k in % over all mentions (a gold missing from the list is a miss) and over the mentions whose gold is
    listed (`hits@k_listed`: the original's WikiDiverse correction, Hits / (1 - share of missing golds)), and MRR.
    ranks: (N,) 1-based gold ranks, 0 for a gold not listed."""
    n, listed = len(ranks), int((ranks > 0).sum())
    summary = {"gold_listed": 100.0 * listed / max(n, 1)}
    for k in ks:
        hits = int(((ranks > 0) & (ranks <= k)).sum())
        summary[f"hits@{k}"] = 100.0 * hits / max(n, 1)
        summary[f"hits@{k}_listed"] = 100.0 * hits / max(listed, 1)
    summary["mrr"] = float(torch.where(ranks > 0, 1.0 / ranks.clamp(min=1), torch.zeros(())).mean()) if n else 0.0
    return summary


def log_summary(summary):
    """One line of a ranking summary: Hits@k up to the list length, MRR, and the figures over listed golds."""
    hits = "  ".join(f"H@{k.split('@')[1]} {v:.2f}" for k, v in summary.items()  # k past the list length = recall
                     if k.startswith("hits@") and not k.endswith("_listed") and int(k[5:]) <= summary["candidates"])
    listed = "  ".join(f"H@{k.split('@')[1].split('_')[0]} {v:.2f}" for k, v in summary.items()
                       if k.startswith("hits@") and k.endswith("_listed") and int(k[5:-7]) <= summary["candidates"])
    logger.info(f"{summary['split']}: {summary['examples']} mentions, {summary['protocol']}: {hits}  "
                f"MRR {summary['mrr']:.4f}  (gold listed for {summary['gold_listed']:.1f} %; over those: {listed})")
