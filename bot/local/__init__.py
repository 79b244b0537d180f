"""The local stack shared by the demo, the tests and bench: the Slack workspace emulator, the demo repository and story, the tiny service image."""
