"""Routes of the jobs and processors API, mounted by the project under /api/v1/.

Paths have no trailing slash, as in the contract. The last route answers every other URL under
/api/v1/ with the contract's 404 body; the project includes this list after the other apps' API
routes so that it comes last.
"""

from __future__ import annotations

from django.urls import path

from . import views

_jobs = views.JobViewSet.as_view
_processors = views.ProcessorViewSet.as_view

urlpatterns = [
    path("processors", _processors({"get": "list"}), name="api-processors-list"),
    path("processors/<str:name>", _processors({"get": "retrieve"}), name="api-processors-detail"),
    path("jobs", _jobs({"get": "list", "post": "create"}), name="api-jobs-list"),
    path("jobs/validate", _jobs({"post": "validate"}), name="api-jobs-validate"),
    path(
        "jobs/<str:id>",
        _jobs({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="api-jobs-detail",
    ),
    path("jobs/<str:id>/pause", _jobs({"post": "pause"}), name="api-jobs-pause"),
    path("jobs/<str:id>/resume", _jobs({"post": "resume"}), name="api-jobs-resume"),
    path("jobs/<str:id>/cancel", _jobs({"post": "cancel"}), name="api-jobs-cancel"),
    path("jobs/<str:id>/retry", _jobs({"post": "retry"}), name="api-jobs-retry"),
    path("jobs/<str:id>/results", _jobs({"get": "results"}), name="api-jobs-results"),
    path("jobs/<str:id>/rows", _jobs({"get": "rows"}), name="api-jobs-rows"),
    path("jobs/<str:id>/events", _jobs({"get": "events"}), name="api-jobs-events"),
    path("", views.api_not_found),
    path("<path:rest>", views.api_not_found, name="api-not-found"),
]
