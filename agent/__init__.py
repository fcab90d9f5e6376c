"""hostflame agent: sampling, draining, process tracking, targets, profiles and exporters."""
