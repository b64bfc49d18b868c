"""The speed benchmarks' bookkeeping: interleaved order, ratios of medians, the README lines."""

import json

from benchmarks.speed.compare import interleaved, summary
from benchmarks.speed.readme import readme_section


def test_rounds_alternate_the_order_and_the_speedup_is_a_ratio_of_medians():
    calls = []
    clock = iter([5.0, 1.0, 1.2, 4.0, 6.0, 0.9, 1.1, 30.0])

    def variant(name):
        def run():
            calls.append(name)
            return next(clock)

        return run

    times = interleaved({"before": variant("before"), "after": variant("after")}, rounds=4)
    assert calls == ["before", "after", "after", "before", "before", "after", "after", "before"]
    assert times == {"before": [5.0, 4.0, 6.0, 30.0], "after": [1.0, 1.2, 0.9, 1.1]}
    result = summary(times)
    assert result["speedup"] == (5.5 / 1.05)  # medians: an outlier round does not move it
    per = summary({"before": [10.0], "after": [50.0]}, per={"before": 10, "after": 1000})
    assert per["speedup"] == 20.0  # 1 s vs 0.05 s per resample


def test_readme_section_quotes_each_result_file(tmp_path):
    assert readme_section(tmp_path) == ""
    (tmp_path / "speed_evaluate.json").write_text(
        json.dumps(
            {
                "structures": 1000,
                "bootstrap": 1000,
                "probe_evaluate": {"speedup": 6.0, "median_seconds": {"before": 60.0, "after": 10.0}},
                "evaluate_signal": {"speedup": 40.0, "structures": 100000},
            }
        )
    )
    (tmp_path / "step_cost_mace.json").write_text(
        json.dumps(
            {
                "backbone": "mace",
                "runs": {
                    "before": [{"atoms": 9, "overhead_cpu_ratio_of_medians": 0.12}],
                    "after, pooling": [{"atoms": 9, "overhead_cpu_ratio_of_medians": 0.015}],
                },
            }
        )
    )
    (tmp_path / "scaling_old.json").write_text(json.dumps([{"atoms": 9}]))  # older format: skipped
    text = readme_section(tmp_path)
    assert "x6.0 faster (60 s -> 10.0 s median)" in text and "x40 per resample" in text
    assert "mace (9 atoms)" in text and "before: +12.0 %" in text and "after, pooling: +1.5 %" in text
