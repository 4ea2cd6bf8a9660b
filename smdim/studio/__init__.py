"""The studio behind `smdim serve`: pieces with tracks (piece), what the model does to them (editing),
the web server and its page (server, static/)."""
