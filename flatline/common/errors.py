"""User-facing errors: the CLI prints them as one line and exits with code 2, before any expensive work."""


class FlatlineError(Exception):
    """A mistake the user can fix (config, data, model path); the message says what and how."""


class ConfigError(FlatlineError):
    pass


class DataError(FlatlineError):
    pass


class ModelError(FlatlineError):
    pass


class PluginError(FlatlineError):
    """A user plug-in returned something the trainer cannot use (raised on its first call)."""


class PluginTimeout(PluginError):
    """A user plug-in did not return within plugin_timeout_s (it may still be running in its worker thread)."""


class PluginExit(PluginError):
    """A user plug-in called sys.exit() (raised SystemExit): caught at the plug-in boundary, never a quiet exit 0."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout` and cluster schedulers send) during a run: handled like Ctrl-C, so the run writes its
    summary and settles its log book entry before it exits."""

    signal_name = "SIGTERM"


class HungUp(Terminated):
    """SIGHUP (the terminal went away: an ssh drop, a closed window) during a run: settled as for SIGTERM."""

    signal_name = "SIGHUP"
