# Scheduled reprocessing: Cloud Scheduler launches the Flex Template on a cron. The run skips
# tracks already done, redoes changed sources, and a new model or checkpoint writes a new folder.
# The job's name is derived from the output prefix and model (local.job_name), as every other launch
# path derives it: Dataflow refuses a launch while a run on that prefix is still going.

locals {
  # Sent with every launch (beamsplitter_job.parameters). No worker image: the workers run the
  # spec's image (main.tf, template_spec).
  job_parameters = {
    manifest     = var.manifest
    output       = local.output
    model        = var.model
    disk_size_gb = tostring(var.disk_size_gb)
    # A run in which too many tracks failed fails its job, which the alert policies report (alerts.tf).
    max_failed_fraction = tostring(var.max_failed_fraction)
    # Where chunk fan-out parks its chunks, if a run asks for it (the job's default is whole tracks,
    # with or without an accelerator): the bucket without soft delete.
    scratch_location = "gs://${google_storage_bucket.scratch.name}/scratch"
  }
  # beamsplitter_job.job_name in HCL: one job name per output prefix and model, whoever launches it
  # (Dataflow refuses a second job of a name while one runs; tests compare the two).
  job_name = "${var.name}-${trim(lower(replace(trimprefix(var.model, "spleeter:"), "/[^A-Za-z0-9]+/", "-")), "-")}-${substr(sha256("${trimsuffix(local.output, "/")}|${var.model}"), 0, 12)}"
  # Sent with an accelerator only: the hint of the steps that run the model, and how many models each GPU machine
  # loads for all of its SDK processes. A CPU-only job (accelerator = "") leaves both to the job's
  # defaults: no hint, one model per SDK process.
  gpu_parameters = {
    inference_accelerator = var.accelerator
    model_copies          = tostring(var.model_copies)
  }
  # The request of beamsplitter_job.launch_body (infra/dataflow), in HCL; tests keep the two equal.
  launch_body = {
    launchParameter = {
      jobName              = local.job_name
      containerSpecGcsPath = local.template_path
      parameters           = merge(local.job_parameters, var.accelerator == "" ? {} : local.gpu_parameters)
      environment = {
        serviceAccountEmail   = google_service_account.worker.email
        tempLocation          = "${local.work}/temp"
        stagingLocation       = "${local.work}/staging"
        machineType           = var.machine_type
        maxWorkers            = var.max_workers
        launcherMachineType   = var.launcher_machine_type
        additionalExperiments = var.experiments
      }
    }
  }
}

# Calls the Dataflow API with its own identity, allowed to start jobs that run as the worker.
resource "google_service_account" "scheduler" {
  account_id   = "${var.name}-scheduler"
  display_name = "beamsplitter scheduled launches"
}

# Dataflow grants on the project only (there are no per-job roles): the launchers get this role,
# which creates and reads jobs and nothing else (no cancel, update or delete, none of
# roles/dataflow.developer's other permissions); each may only launch jobs that run as the worker.
resource "google_project_iam_custom_role" "launcher" {
  role_id     = "${replace(var.name, "-", "_")}_launcher"
  title       = "${var.name} launcher"
  description = "Launch the ${var.name} Flex Template and watch its jobs"
  permissions = ["dataflow.jobs.create", "dataflow.jobs.get", "dataflow.messages.list"]
}

resource "google_project_iam_member" "scheduler_dataflow" {
  project = var.project
  role    = google_project_iam_custom_role.launcher.id
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_service_account_iam_member" "scheduler_acts_as_worker" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_storage_bucket_iam_member" "scheduler_reads_template" {
  bucket = google_storage_bucket.work.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "reprocess" {
  name             = "${var.name}-reprocess"
  region           = var.region
  schedule         = var.schedule
  time_zone        = var.time_zone
  attempt_deadline = "320s"
  retry_config {
    retry_count = 1
  }
  http_target {
    http_method = "POST"
    uri         = "https://dataflow.googleapis.com/v1b3/projects/${var.project}/locations/${var.region}/flexTemplates:launch"
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode(local.launch_body))
    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
  depends_on = [google_project_service.apis, google_storage_bucket_object.template]
}
