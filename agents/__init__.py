"""Faust agents, one module per consumed topic; Faust autodiscovery imports them."""
