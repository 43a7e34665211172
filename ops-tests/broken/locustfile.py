"""Broken on purpose: an unused import and an undefined name."""

import json

from locust import FastHttpUser, task


class Broken(FastHttpUser):
    @task
    def post(self):
        self.client.post("/v1/conversations", headers=hedaers)
