"""Test helpers: servers and settings (backing), HTTP (http), subprocess servers
(processes), tokens (tokens). Tests import them from here, never from conftest."""
