"""Airflow DAG: scheduled catalogue reprocessing on Dataflow (the alternative to Cloud Scheduler).

    plan      `beamsplitter plan` from a pod of the beamsplitter image (KubernetesPodOperator), its
              pipeline on Dataflow: what the run must do (new tracks, changed sources, a new
              model), with counts, in the task log, and as a manifest under OUTPUT/plans/;
    separate  launches the Flex Template (DataflowStartFlexTemplateOperator) and waits for the job.

The run itself skips tracks already done, so a launch is always safe; plan is the record of
what each run was expected to do. Install: copy this file and beamsplitter_job.py (beside it)
into the DAGs folder, and set the Airflow Variable `beamsplitter` to JSON with the keys
project, region, work (gs://WORK bucket), image, service_account, manifest, output, model; image
is plan's (its pod and its Dataflow job), so give the tag the template spec names, for a plan made
by the code that runs.
Needs apache-airflow-providers-google and apache-airflow-providers-cncf-kubernetes.
"""

from __future__ import annotations

import datetime
import os
import sys

from airflow import DAG
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # beamsplitter_job.py lies beside this file
import beamsplitter_job as job  # noqa: E402

SCHEDULE = "0 3 * * 0"  # Sundays 03:00 UTC
POD_NAMESPACE = "default"  # where the plan pod runs; its service account must be able to start Dataflow jobs


def var(key: str) -> str:
    """A field of the `beamsplitter` Airflow Variable, read when the task runs (Jinja), not when the DAG is parsed."""
    return "{{ var.json.beamsplitter.%s }}" % key


WORK = var("work")

with DAG(
    dag_id="beamsplitter_reprocess",
    schedule=SCHEDULE,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,  # one run at a time: the next waits for the last one's job
    user_defined_macros={"beamsplitter_job_name": job.job_name},
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=15)},
    tags=["beamsplitter"],
) as dag:
    plan = KubernetesPodOperator(
        task_id="plan",
        name="beamsplitter-plan",
        namespace=POD_NAMESPACE,
        image=var("image"),
        arguments=job.plan_arguments(
            manifest=var("manifest"), output=var("output"), model=var("model"),
            beam_options=job.dataflow_options(project=var("project"), region=var("region"), work=WORK,
                                              image=var("image"), service_account=var("service_account"))),
        get_logs=True,
    )
    separate = DataflowStartFlexTemplateOperator(
        task_id="separate",
        project_id=var("project"),
        location=var("region"),
        body=job.launch_body(
            # One name per output prefix and model (Dataflow refuses a second job of a name while one
            # runs), kept as it is: the operator would otherwise append a random suffix to it, and a
            # retry or a manual trigger could start a second job on the prefix.
            job_name="{{ beamsplitter_job_name(output=var.json.beamsplitter.output, "
                     "model=var.json.beamsplitter.model) }}",
            template=WORK + "/templates/beamsplitter.json",
            # No worker image: the workers run the template's own image (the spec's, see template.py).
            parameters=job.parameters(manifest=var("manifest"), output=var("output"), model=var("model")),
            environment=job.environment(service_account=var("service_account"), temp_location=WORK + "/temp",
                                        staging_location=WORK + "/staging"),
        ),
        append_job_name=False,
        wait_until_finished=True,
        deferrable=True,  # the wait for a job of hours holds no worker slot
    )
    plan >> separate
