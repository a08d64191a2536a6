"""SpaceSSL's library: everything the SSL_*.py scripts share (reading images, the model and its
objectives, embedding caches, search, probes, maps and reports). The scripts at the top level
are thin users of it; `spacessl.api` is the same code for a notebook."""
