# Sphinx configuration of the course site (tools/site.py stages the pages and runs the build; see there).
project = "qvlearn"
author = "the qvlearn authors"
extensions = ["myst_nb"]
root_doc = "README"
nb_execution_mode = "off"            # the committed outputs are the site's: never re-executed
nb_merge_streams = True
myst_heading_anchors = 4             # "#section-title" links, as GitHub makes them
myst_enable_extensions = ["colon_fence"]
html_theme = "furo"
html_title = "qvlearn: the Qwen-VL vision encoder, piece by piece"
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
suppress_warnings = ["mystnb.unknown_mime_type"]
