"""The only modules that talk to Redis, Slack's Web API, git and Prometheus."""
