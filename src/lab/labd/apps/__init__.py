"""App releases on clusters: modules installed, upgraded, rolled back (docs/apps.md)."""
