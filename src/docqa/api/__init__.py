"""HTTP views: thin functions that resolve dependencies, call a service and shape JSON."""
