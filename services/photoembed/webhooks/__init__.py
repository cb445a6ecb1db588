"""Webhooks: a library's endpoints, told of its events (`photoembed.events`) by signed POSTs that
follow the Standard Webhooks specification, at least once, retried for a day and more.

* `endpoints`: make, list, delete and replay an endpoint (the API's routes call these);
* `addresses`: which URLs may be called at all (no loopback, private, link-local or metadata
  address unless WEBHOOK_ALLOW_PRIVATE), checked when an endpoint is made and at every send;
* `secrets` and `signing`: the endpoint's secret (kept encrypted) and the signature of a send;
* `delivery`: one send of one event to one endpoint, and what its answer means;
* `pump`: in the worker's events process, numbers the events, makes a delivery for each endpoint
  that wants one, and hands the due ones to the `deliver_webhook` actor.
"""
