variable "project" {
  type        = string
  description = "Google Cloud project id"
}

variable "region" {
  type        = string
  description = "region of the buckets, the image repository, the Dataflow jobs and the schedule (one with L4 GPUs for the default accelerator)"
  default     = "us-central1"
}

variable "name" {
  type        = string
  description = "prefix of every resource's name"
  default     = "beamsplitter"
}

variable "catalogue_buckets" {
  type        = list(string)
  description = "buckets holding manifests and source audio, which the workers may read"
  default     = []
}

variable "image" {
  type        = string
  description = "the beamsplitter image (GPU variant for GPU runs) by the tag infra/docker/build.py built it as: the template launches it, and its launcher makes it the workers' image"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*[a-z0-9]:[A-Za-z0-9_][A-Za-z0-9_.-]*$", var.image)) && !endswith(var.image, ":latest")
    error_message = "Give the image by the version tag it was built as (not latest, not a digest)."
  }
}

variable "manifest" {
  type        = string
  description = "the catalogue manifest the schedule reprocesses, gs://..."
}

variable "output" {
  type        = string
  description = "output prefix; default: gs://<stems bucket>/catalogue"
  default     = ""
}

variable "model" {
  type    = string
  default = "spleeter:2stems"
}

variable "accelerator" {
  type        = string
  description = "resource hint of the steps that run the model, whole tracks decoded, separated and encoded on its machines (right fitting); empty for a CPU-only job"
  default     = "type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver"
}

variable "model_copies" {
  type        = number
  description = "with an accelerator: models each GPU machine loads, shared by all of its SDK processes (one per vCPU)"
  default     = 1
  validation {
    condition     = var.model_copies >= 1 && floor(var.model_copies) == var.model_copies
    error_message = "model_copies: a whole number, at least 1."
  }
}

variable "machine_type" {
  type        = string
  description = "machines of every other step"
  default     = "n2-standard-8"
}

variable "launcher_machine_type" {
  type        = string
  description = "machine of the Flex Template launcher, which loads the image's TensorFlow to plan the run (Dataflow's default: n1-standard-1)"
  default     = "n2-standard-2"
}

variable "max_workers" {
  type    = number
  default = 50
}

variable "disk_size_gb" {
  type    = number
  default = 50
}

variable "experiments" {
  type    = list(string)
  default = ["use_runner_v2"]
  validation {
    # Right fitting puts a GPU on the steps that run the model alone; worker_accelerator (and use_nvidia_mps,
    # set through it) would put one on every worker.
    condition     = alltrue([for e in var.experiments : !contains(["worker_accelerator", "use_nvidia_mps"], split("=", e)[0])])
    error_message = "No worker_accelerator or use_nvidia_mps: the job's accelerator is the inference step's resource hint."
  }
}

variable "schedule" {
  type        = string
  description = "cron schedule of the reprocessing runs"
  default     = "0 3 * * 0"
}

variable "time_zone" {
  type    = string
  default = "Etc/UTC"
}

variable "temp_retention_days" {
  type        = number
  description = "age after which temp/, staging/ and beam-artifacts/ objects in the work bucket are deleted"
  default     = 7
}

variable "flink_namespace" {
  type        = string
  description = "GKE namespace of the Flink deployment whose service accounts act as the worker service account; empty: none"
  default     = ""
}

variable "max_failed_fraction" {
  type        = number
  description = "a scheduled run fails its job when more than this share of the tracks it tried failed"
  default     = 0.05
  validation {
    condition     = var.max_failed_fraction >= 0 && var.max_failed_fraction <= 1
    error_message = "max_failed_fraction: a share from 0 to 1."
  }
}

variable "stems_soft_delete_days" {
  type        = number
  description = "days Cloud Storage keeps deleted or replaced stems (billed as stored); 0: none"
  default     = 7
  validation {
    condition     = var.stems_soft_delete_days == 0 || (var.stems_soft_delete_days >= 7 && var.stems_soft_delete_days <= 90)
    error_message = "stems_soft_delete_days: 0, or 7 to 90 (Cloud Storage's range)."
  }
}

variable "notification_channels" {
  type        = list(string)
  description = "Cloud Monitoring notification channel ids that the alert policies notify"
  default     = []
}

variable "alert_email" {
  type        = string
  description = "an email address the alert policies notify (a channel is made for it); empty: none"
  default     = ""
}

variable "max_run_hours" {
  type        = number
  description = "alert when a catalogue job runs longer than this"
  default     = 24
}

variable "stuck_hours" {
  type        = number
  description = "alert when a running catalogue job finishes no track for this long"
  default     = 2
}

variable "airflow_namespace" {
  type        = string
  description = "Kubernetes namespace of the Airflow pods that run dataflow/airflow_dag.py; empty: no Airflow identities"
  default     = ""
}

variable "airflow_service_account" {
  type        = string
  description = "the Kubernetes service account of those pods (Workload Identity)"
  default     = "airflow-worker"
}
