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
  description = "the beamsplitter image (GPU variant for GPU runs), with a version tag or digest"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]*)$", var.image)) && !endswith(var.image, ":latest")
    error_message = "Give the image with a version tag or digest, not latest."
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
  description = "resource hint of the inference step alone (right fitting); empty for a CPU-only job"
  default     = "type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver"
}

variable "machine_type" {
  type        = string
  description = "machines of every other step"
  default     = "n2-standard-8"
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
