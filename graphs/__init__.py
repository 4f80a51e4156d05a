"""Graph assembly and the run API shared by the CLI and the server."""
