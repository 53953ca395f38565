"""The run report: figures embedded and captioned, tables from the metrics, notebooks that did not run left out."""

import base64
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers.core import outputs
from helpers.deploy import report# noqa: E402


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "outputs" / "demo"
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    outputs.save_figure(fig, folder, "compare_architectures")
    outputs.save_figure(fig, folder, "stray_figure")
    plt.close(fig)
    outputs.save_metrics(folder, "04_compare_architectures", {"table": {"unet": {"score": 0.61234, "mIoU": 0.5},
                                                                       "linknet": {"score": 0.6, "mIoU": float("nan")}}})
    record = {"profile": "cpu", "notebooks": [{"name": "04_compare_architectures", "status": "ok", "seconds": 12.3,
                                               "parameters": {"data_dir": "/x/data/neu-seg", "split": "auto", "allow_leaky_split": True}}]}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_report_embeds_figures_with_captions_and_tables(run_dir):
    page = report.build_report(run_dir).read_text()
    assert page.startswith("<!DOCTYPE html>") and page == (run_dir / "report.html").read_text()
    image = base64.b64encode((run_dir / "figures" / "compare_architectures.png").read_bytes()).decode()
    assert image in page  # self-contained
    assert "04_compare_architectures · data: neu-seg · split: split=auto, allow_leaky_split=True · profile: cpu" in page
    assert "<th>mIoU</th><th>score</th>" in page  # metrics JSON keys are sorted
    assert "<td>unet</td><td>0.5</td><td>0.6123</td>" in page and "<td>linknet</td><td>–</td>" in page  # NaN: a dash
    assert "Other figures" in page and "stray_figure" in page
    assert "03_train_segmentation" not in page  # did not run, wrote nothing


def test_caption_without_parameters():
    assert report.caption("05_pretrain_radiographs", {}, "smoke") == \
        "05_pretrain_radiographs · data: notebook default · split: notebook default · profile: smoke"


@pytest.mark.parametrize("value, expected", [({}, ""), (3, ""), ({"a": 1}, "<td>a</td><td>1</td>")])
def test_table_html(value, expected):
    assert expected in report.table_html(value) and (expected or report.table_html(value) == "")


def test_missing_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder"):
        report.build_report(tmp_path / "nothing")
