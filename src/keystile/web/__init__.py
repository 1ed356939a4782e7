"""The web layer: Quart blueprints that parse, call one service method, and respond."""
