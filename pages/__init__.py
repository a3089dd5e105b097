"""Dashboard pages (routed by ``app.py`` with ``st.navigation``); ``_shared`` holds what several
pages use. A package, so that ``import pages._shared`` finds this folder first."""
