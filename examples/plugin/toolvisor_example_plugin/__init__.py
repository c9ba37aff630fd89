"""An example toolvisor plugin package: a tool, a lifecycle hook and an alert sink."""
