"""The live staff dashboard: pages under /dashboard/, its socket at /ws/dashboard/, its events."""
