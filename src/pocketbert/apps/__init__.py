"""Applications on top of the library: the pocketbert command, the HTTP server and its load
driver, the web page and its browser check, the generated results tables."""
