"""IDH Pseudocolor: glioma IDH status from pseudo-colored MRI (a reproduction of MacKinnon et
al., "The Color of Time").

Where things live (the science is in plain modules without Kedro; ``pipelines/<name>`` holds
thin nodes over them):

Vocabulary
    ``configurations``   the 28 (+1) channel assignments, numbered as the paper's Figure 2
    ``arms``             an arm (model x finetuned / from scratch), its keys and its words

Data
    ``cohort``           a cohort folder (EGD, BraTS) and its labels, read as they come
    ``slices``           one subject's mid-tumor slice, validated and normalized; a cohort's
                         extraction and its manifest
    ``splits``           the patient-level stratified train/validation/test split
    ``phantom``          the synthetic cohort (the default data); ``planted`` checks its truth
    ``qc``               the data's QC numbers and montage
    ``raw_studies``      a hospital's raw study (DICOM series or NIfTI files) as the four
                         sequences, each identified with its evidence
    ``registration``     co-registration, the template grid, N4, the brain mask (SimpleITK)
    ``raw_phantom``      the phantom as a scanner gives it (DICOM or NIfTI, misaligned, skull)
    ``preprocess``       raw studies -> an EGD-layout cohort (the steps above, per patient)
    ``segmentation``     automatic tumor masks: a 2-D U-Net (MONAI), its Dice, the mask files

Models and training
    ``pseudocolor``      sequences -> the channels a network sees
    ``models``           the timm factory, with the provenance of every weight
    ``pretraining``      the demo's own pretraining on bundled photographs (not ImageNet)
    ``training``         one run (Lightning): loss, optimizer, schedule, early stopping
    ``runs``             many runs: the sweep's and the winner's loops, run records, bundles

The study
    ``search``           the hyperparameter search (Optuna's study: "the search study")
    ``permutation_study`` the sweep's arithmetic: summaries, the winner, seed ensembles ("the
                         study" in dataset names: study_runs, study_results, study_winner)
    ``metrics``          metrics, bootstrap intervals, calibration, DeLong's test
    ``external``, ``cross_validation``   the winner on a second cohort, over K folds
    ``predict``          trained runs applied to new patients
    ``tracking``         every trial and run as a nested MLflow run, from any process
    ``mlflow_model``     the final evaluation's runs as a registered MLflow model (pyfunc)
    ``report``           the report: ``stats`` (numbers), ``figures``, ``html``

Settings
    ``parameters``       every pipeline's parameters as typed settings (conf/base is their only
                         home; fields marked ``machine`` never change a result)
    ``paper_path``       the paper's settings table and the guards of ``--env a4000/l4``
    ``parallel``         subjects in parallel processes, in order, with a progress bar; the
                         process pool stopped after each map
    ``provenance``       fingerprints of searches and best_params (standard library only)
    ``config_loader``    the conf layers (base -> paper -> env -> rehearsal -> local)
    ``settings``         Kedro's own project settings; ``hooks`` check a run before any node
                         and track it in MLflow (kedro-mlflow)

Kedro
    ``pipelines``        one package per pipeline (``nodes.py``, ``pipeline.py``), registered by
                         ``pipeline_registry``
    ``datasets``         the catalog's own datasets (cohort index, NumPy archives, Optuna
                         storage, trained runs, weights), imported only when named
    ``runner``           the DaskRunner (GPUs, machines); ``worker_logging`` for its workers
    ``cli``              ``idh-pseudocolor phantom | preprocess | predict``
    ``optuna_compat``    the one Optuna check that has no public name
"""

__version__ = "0.1.0"
