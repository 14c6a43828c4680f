"""The home page; each demo's pages live in its own app."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    """List the demos and what each one shows."""
    return render(request, "home.html")
