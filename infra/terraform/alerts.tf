# Someone hears of a run that went wrong: Cloud Monitoring alert policies on the scheduled jobs
# (every job whose name starts with "<name>-", see local.job_name), sent to var.notification_channels
# and, when var.alert_email is set, to an email channel made here.

locals {
  notification_channels = concat(var.notification_channels, google_monitoring_notification_channel.email[*].id)
  # Dataflow's jobs of this deployment (their names come from beamsplitter_job.job_name).
  our_jobs = "resource.type = \"dataflow_job\" AND resource.labels.job_name = starts_with(\"${var.name}-\")"
}

resource "google_monitoring_notification_channel" "email" {
  count        = var.alert_email == "" ? 0 : 1
  display_name = "${var.name} alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

# A job that failed: the runner lost it, a step kept failing, the Flex Template launcher failed (the
# launch itself still got HTTP success), or more tracks failed than max_failed_fraction allows.
resource "google_monitoring_alert_policy" "job_failed" {
  display_name          = "${var.name}: a catalogue job failed"
  combiner              = "OR"
  notification_channels = local.notification_channels
  conditions {
    display_name = "Dataflow job failed"
    condition_threshold {
      filter          = "metric.type = \"dataflow.googleapis.com/job/is_failed\" AND ${local.our_jobs}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  documentation {
    content = "A beamsplitter job failed. Its failures are under OUTPUT/failures/ (failures/run-<id>-verdict.json when it failed over max_failed_fraction); the next run completes the tracks not done."
  }
}

# A run over its expected time (a hung source, a stuck worker): it holds the schedule, since
# Dataflow refuses the next launch of the same job name while it runs.
resource "google_monitoring_alert_policy" "job_too_long" {
  display_name          = "${var.name}: a catalogue job runs longer than ${var.max_run_hours} h"
  combiner              = "OR"
  notification_channels = local.notification_channels
  conditions {
    display_name = "Dataflow job elapsed time"
    condition_threshold {
      filter          = "metric.type = \"dataflow.googleapis.com/job/elapsed_time\" AND ${local.our_jobs}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.max_run_hours * 3600
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

# A stuck job: running, yet no track done for stuck_hours (the job's own counter, tracks_done).
resource "google_monitoring_alert_policy" "job_stuck" {
  display_name          = "${var.name}: a catalogue job finished no track in ${var.stuck_hours} h"
  combiner              = "OR"
  notification_channels = local.notification_channels
  conditions {
    display_name = "tracks_done did not grow"
    condition_threshold {
      filter          = "metric.type = \"dataflow.googleapis.com/job/user_counter\" AND metric.labels.metric_name = \"tracks_done\" AND ${local.our_jobs}"
      comparison      = "COMPARISON_LT"
      threshold_value = 1
      duration        = "${var.stuck_hours * 3600}s"
      aggregations {
        alignment_period   = "3600s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }
}

# The share of failed tracks, while the job runs (the job fails over max_failed_fraction only at its end).
resource "google_monitoring_alert_policy" "failure_fraction" {
  display_name          = "${var.name}: more than ${var.max_failed_fraction * 100}% of a job's tracks failed"
  combiner              = "OR"
  notification_channels = local.notification_channels
  conditions {
    display_name = "failed / (done + failed)"
    condition_prometheus_query_language {
      query = join("", [
        "sum by (job_name) (dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",metric_name=~\"tracks_failed[.].*\",job_name=~\"${var.name}-.*\"})",
        " / (sum by (job_name) (dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",metric_name=~\"tracks_failed[.].*|tracks_done\",job_name=~\"${var.name}-.*\"}))",
        " > ${var.max_failed_fraction}",
      ])
      duration            = "600s"
      evaluation_interval = "300s"
    }
  }
}

# A scheduled launch that Dataflow refused (a previous run still going under the same job name, a
# permission, a bad parameter): Cloud Scheduler logs the attempt as an error.
resource "google_monitoring_alert_policy" "launch_failed" {
  display_name          = "${var.name}: a scheduled launch failed"
  combiner              = "OR"
  notification_channels = local.notification_channels
  conditions {
    display_name = "Cloud Scheduler attempt failed"
    condition_matched_log {
      filter = "resource.type = \"cloud_scheduler_job\" AND resource.labels.job_id = \"${google_cloud_scheduler_job.reprocess.name}\" AND severity >= ERROR"
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
  }
}
