"""CFlow-AD for autovi (Gudovskiy et al., WACV 2022)."""
