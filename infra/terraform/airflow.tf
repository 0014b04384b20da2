# Airflow's identities (dataflow/airflow_dag.py), when var.airflow_namespace names the namespace of
# the Kubernetes pods they run in: one Google service account for the DAG's plan pod and for its
# launch of the template (set it as the GCP connection's impersonation chain), bound to the
# Kubernetes service account var.airflow_service_account through Workload Identity.

locals {
  airflow = var.airflow_namespace == "" ? [] : ["airflow"]
}

resource "google_service_account" "airflow" {
  for_each     = toset(local.airflow)
  account_id   = "${var.name}-airflow"
  display_name = "beamsplitter Airflow plan and launch"
}

resource "google_service_account_iam_member" "airflow_workload_identity" {
  for_each           = toset(local.airflow)
  service_account_id = google_service_account.airflow[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.airflow_namespace}/${var.airflow_service_account}]"
}

# Launch the template, and plan's own Dataflow job; both run as the worker account.
resource "google_project_iam_member" "airflow_launches" {
  for_each = toset(local.airflow)
  project  = var.project
  role     = google_project_iam_custom_role.launcher.id
  member   = "serviceAccount:${google_service_account.airflow[each.key].email}"
}

resource "google_service_account_iam_member" "airflow_acts_as_worker" {
  for_each           = toset(local.airflow)
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.airflow[each.key].email}"
}

# The template spec, and plan's staging and temporary files.
resource "google_storage_bucket_iam_member" "airflow_work" {
  for_each = toset(local.airflow)
  bucket   = google_storage_bucket.work.name
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.airflow[each.key].email}"
  condition {
    title      = "templates-staging-temp"
    expression = "resource.name == \"projects/_/buckets/${google_storage_bucket.work.name}\" || resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.work.name}/objects/templates/\") || resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.work.name}/objects/staging/\") || resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.work.name}/objects/temp/\")"
  }
}

# plan reads the manifest and the output's completion records before its job starts.
resource "google_storage_bucket_iam_member" "airflow_reads" {
  for_each = toset([for pair in setproduct(local.airflow, distinct(concat(var.catalogue_buckets, [local.output_bucket]))) : pair[1]])
  bucket   = each.value
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.airflow["airflow"].email}"
}
