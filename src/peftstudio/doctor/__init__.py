"""`peftstudio doctor`: is this environment, with this config, able to run?"""
