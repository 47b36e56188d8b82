"""reporting pipeline: figures and tables are versioned datasets; the report embeds them.

Figures are saved through matplotlib and read back as images (Kedro transcoding,
``figure_2@matplotlib`` / ``figure_2@image``), so kedro-viz shows the report's lineage.
"""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.reporting.nodes import (
    build_report,
    check_planted_truth,
    compare_retrained_runs,
    make_table_2,
    plot_calibration,
    plot_composition,
    plot_configurations,
    plot_model_agreement,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                plot_composition,
                ["slice_arrays", "development_split", "study_winner", "params:reporting"],
                "figure_1@matplotlib",
                name="plot_figure_1",
            ),
            node(plot_configurations, "study_results", "figure_2@matplotlib", name="plot_figure_2"),
            node(
                plot_model_agreement,
                ["study_results", "params:permutation_study"],
                "figure_3@matplotlib",
                name="plot_figure_3",
            ),
            node(
                plot_calibration,
                ["test_predictions", "params:reporting"],
                "calibration_plot@matplotlib",
                name="plot_calibration",
            ),
            node(
                make_table_2,
                ["test_predictions", "params:reporting"],
                ["table_2", "pretrained_comparison"],
                name="make_table_2",
            ),
            node(
                compare_retrained_runs,
                ["test_predictions", "study_runs", "params:reporting"],
                "retrain_agreement",
                name="compare_retrained_runs",
            ),
            node(
                check_planted_truth,
                ["study_winner", "cohort_record", "params:environment"],
                "planted_truth",
                name="check_planted_truth",
            ),
            node(
                build_report,
                [
                    "figure_1@image",
                    "figure_2@image",
                    "figure_3@image",
                    "calibration_plot@image",
                    "table_2",
                    "pretrained_comparison",
                    "retrain_agreement",
                    "study_winner",
                    "study_results",
                    "best_params",
                    "qc_summary",
                    "test_metrics",
                    "search_history_plot",
                    "search_importance_plot",
                    "parameters",
                    "planted_truth",
                    "demo_pretrained_weights",
                    "external_validation_summary",
                    "cross_validation_summary",
                    "segmentation_summary",
                    "fallback_configurations",
                    "fallback_test_metrics",
                    "cohort_record",
                ],
                ["report_history", "report"],
                name="build_report",
            ),
        ]
    )
