"""The dashboard's URLs (namespace "jobs"). The REST API lives in jobs/api/urls.py."""

from __future__ import annotations

from django.urls import path

from . import new_job_views, views, webhook_views

app_name = "jobs"

urlpatterns = [
    path("", views.job_list, name="list"),
    # Before jobs/<public_id>/: these fixed names must not be read as job ids.
    path("jobs/_rows/", views.list_rows, name="list_rows"),
    path("jobs/new/", new_job_views.new_job, name="new"),
    path("jobs/new/params/", new_job_views.new_job_params, name="new_params"),
    path("jobs/<str:public_id>/", views.job_detail, name="detail"),
    path("jobs/<str:public_id>/progress/", views.job_progress, name="progress"),
    path("jobs/<str:public_id>/rows/", views.job_rows, name="rows"),
    path("jobs/<str:public_id>/events/", views.job_events, name="events"),
    path("jobs/<str:public_id>/downloads/", views.job_downloads, name="downloads"),
    path("jobs/<str:public_id>/pause/", views.job_pause, name="pause"),
    path("jobs/<str:public_id>/resume/", views.job_resume, name="resume"),
    path("jobs/<str:public_id>/cancel/", views.job_cancel, name="cancel"),
    path("jobs/<str:public_id>/retry/", views.job_retry, name="retry"),
    path("jobs/<str:public_id>/delete/", views.job_delete, name="delete"),
    path("jobs/<str:public_id>/again/", views.job_again, name="again"),
    path("jobs/<str:public_id>/download/<str:fmt>/", views.job_download, name="download"),
    path(
        "jobs/<str:public_id>/webhook/redeliver/",
        webhook_views.redeliver_view,
        name="webhook-redeliver",
    ),
]
