"""cam_core: class activation maps and weakly supervised localisation, one NumPy core.

(The public API is assembled here once the core modules land.)
"""
