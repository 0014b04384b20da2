terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }
  # State in a bucket made once by hand (apply.py passes -backend-config=bucket=...).
  backend "gcs" {}
}

provider "google" {
  project = var.project
  region  = var.region
}
