"""Reusable model parts: dense banks, embeddings, experts, gates, switchers, towers, the bias tower."""
