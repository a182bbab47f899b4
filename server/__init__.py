"""The agentic-backend API server: typed gRPC services over a relational database.

Entry points: ``server.app.create_server`` builds a server, ``server.app.serve`` runs it,
``python -m server`` runs it from the environment. Nothing is imported here, so that other
processes can use ``core.rpc`` without loading the server's dependencies.
"""
