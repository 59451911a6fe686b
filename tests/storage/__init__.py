

def servable(store) -> set[str]:
    """Paths of the disks whose objects may be served, by a probe of every disk."""
    return {path for path, health in store.probe_all().items() if health.servable}
