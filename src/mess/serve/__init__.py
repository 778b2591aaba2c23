"""`mess serve`: a local HTTP API and web page over the feature store (see ``mess.serve.app.create_app``)."""
