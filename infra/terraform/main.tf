# Buckets, image repository and service accounts of beamsplitter on Google Cloud.

locals {
  work_bucket   = "${var.project}-${var.name}-work"  # templates/, temp/, staging/, beam-artifacts/
  stems_bucket  = "${var.project}-${var.name}-stems" # the output prefix's bucket
  work          = "gs://${local.work_bucket}"
  output        = var.output != "" ? var.output : "gs://${local.stems_bucket}/catalogue"
  template_path = "${local.work}/templates/beamsplitter.json"
  # The Flex Template spec, as `gcloud dataflow flex-template build` writes it (template.py build,
  # for projects without Terraform): var.image launches every job, and the launcher makes it the
  # workers' image too (infra/dataflow/main.py), so launcher and workers are one build, one tag.
  template_spec = {
    image    = var.image
    sdkInfo  = { language = "PYTHON" }
    metadata = jsondecode(file("${path.module}/../dataflow/metadata.json"))
  }
}

resource "google_project_service" "apis" {
  for_each           = toset(["dataflow.googleapis.com", "compute.googleapis.com", "storage.googleapis.com", "artifactregistry.googleapis.com", "cloudscheduler.googleapis.com", "iam.googleapis.com"])
  service            = each.value
  disable_on_destroy = false
}

resource "google_storage_bucket" "work" {
  name                        = local.work_bucket
  location                    = upper(var.region)
  uniform_bucket_level_access = true
  lifecycle_rule {
    condition {
      age            = var.temp_retention_days
      matches_prefix = ["temp/", "staging/", "beam-artifacts/"]
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "stems" {
  name                        = local.stems_bucket
  location                    = upper(var.region)
  uniform_bucket_level_access = true
}

resource "google_artifact_registry_repository" "images" {
  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  # A tag names one build for good: the image's own reference (BEAMSPLITTER_IMAGE) is its tag.
  docker_config {
    immutable_tags = true
  }
  depends_on = [google_project_service.apis]
}

# Moving to a new image is `terraform apply` with the new tag: the spec follows, and with it the
# scheduled runs' launcher and workers.
resource "google_storage_bucket_object" "template" {
  bucket       = google_storage_bucket.work.name
  name         = "templates/beamsplitter.json"
  content_type = "application/json"
  content      = jsonencode(local.template_spec)
}

# Dataflow workers and the Flex Template launcher.
resource "google_service_account" "worker" {
  account_id   = "${var.name}-worker"
  display_name = "beamsplitter Dataflow workers"
}

resource "google_project_iam_member" "worker" {
  for_each = toset(["roles/dataflow.worker", "roles/logging.logWriter", "roles/monitoring.metricWriter"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "worker_work" {
  bucket = google_storage_bucket.work.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "worker_stems" {
  bucket = google_storage_bucket.stems.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "worker_catalogue" {
  for_each = toset(var.catalogue_buckets)
  bucket   = each.value
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_artifact_registry_repository_iam_member" "worker_images" {
  repository = google_artifact_registry_repository.images.name
  location   = var.region
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.worker.email}"
}

# On GKE, the Flink deployment's Kubernetes service accounts act as the worker service account.
resource "google_service_account_iam_member" "flink_workload_identity" {
  for_each           = toset(var.flink_namespace == "" ? [] : ["beamsplitter", "flink"])
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.flink_namespace}/${each.value}]"
}
