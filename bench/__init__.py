"""The benchmark harness: this proxy against proxpi, devpi-server and nginx (`bash bench/run`)."""
