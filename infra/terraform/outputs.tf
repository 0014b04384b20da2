output "work_bucket" {
  value = local.work
}

output "stems_bucket" {
  value = "gs://${google_storage_bucket.stems.name}"
}

output "output_prefix" {
  value = local.output
}

output "template_path" {
  value = local.template_path
}

output "image" {
  description = "the image the template launches (launcher and workers): build and push this tag"
  value       = var.image
}

output "image_repository" {
  description = "push images here: <this>/beamsplitter:TAG"
  value       = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}"
}

output "worker_service_account" {
  value = google_service_account.worker.email
}

output "scheduler_job" {
  value = google_cloud_scheduler_job.reprocess.name
}

output "scratch_bucket" {
  value = "gs://${google_storage_bucket.scratch.name}"
}

output "airflow_service_account" {
  description = "the Google service account of the Airflow plan pod and launch (empty without airflow_namespace)"
  value       = join("", [for account in google_service_account.airflow : account.email])
}
