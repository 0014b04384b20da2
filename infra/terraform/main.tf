# Buckets, image repository and service accounts of beamsplitter on Google Cloud.

locals {
  work_bucket    = "${var.project}-${var.name}-work"    # templates/, temp/, staging/, beam-artifacts/
  stems_bucket   = "${var.project}-${var.name}-stems"   # the output prefix's bucket
  scratch_bucket = "${var.project}-${var.name}-scratch" # chunk fan-out's scratch (--scratch_location)
  work          = "gs://${local.work_bucket}"
  output        = var.output != "" ? var.output : "gs://${local.stems_bucket}/catalogue"
  template_path = "${local.work}/templates/beamsplitter.json"
  output_bucket = regex("^gs://([^/]+)", local.output)[0]
  output_path   = trimsuffix(trimprefix(local.output, "gs://${local.output_bucket}"), "/")
  output_condition = join(" || ", [
    "resource.name == \"projects/_/buckets/${local.output_bucket}\"",
    "resource.name.startsWith(\"projects/_/buckets/${local.output_bucket}/objects/${trimprefix(local.output_path, "/")}${local.output_path == "" ? "" : "/"}\")",
  ])
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
  for_each           = toset(["dataflow.googleapis.com", "compute.googleapis.com", "storage.googleapis.com", "artifactregistry.googleapis.com", "cloudscheduler.googleapis.com", "iam.googleapis.com", "monitoring.googleapis.com"])
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
  # Chosen, not inherited: Cloud Storage keeps deleted and replaced objects for 7 days by default,
  # and bills them. Stems are replaced when a track is redone (a new codec, --force), so the
  # default window stays as a guard against a mistaken redo; 0 turns it off (COSTS.md).
  soft_delete_policy {
    retention_duration_seconds = var.stems_soft_delete_days * 86400
  }
}

# Chunk fan-out parks every decoded and separated chunk here for minutes (transforms/stash.py):
# hundreds of TB per million tracks written and deleted. No soft delete (a deleted chunk is never
# wanted back, and soft-deleted bytes bill as stored), and what a dead run left is deleted after a day.
resource "google_storage_bucket" "scratch" {
  name                        = local.scratch_bucket
  location                    = upper(var.region)
  uniform_bucket_level_access = true
  soft_delete_policy {
    retention_duration_seconds = 0
  }
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "Delete"
    }
  }
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

# Write access to the output prefix alone (an IAM condition on object names), in whichever bucket it
# lies; listing is granted on the bucket, which Cloud Storage checks on the bucket's own name.
resource "google_storage_bucket_iam_member" "worker_output" {
  bucket = local.output_bucket
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.worker.email}"
  condition {
    title      = "output-prefix"
    expression = local.output_condition
  }
}

resource "google_storage_bucket_iam_member" "worker_scratch" {
  bucket = google_storage_bucket.scratch.name
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
