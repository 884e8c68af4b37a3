"""Browser tests of the playground page (service/static/)."""
