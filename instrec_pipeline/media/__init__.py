"""Media stage: fetch sources into a content-addressed raw store, probe them, demux frames and audio.

Plain functions over paths and arrays (no Dagster here), so they can be tested and reused on their own.
Import from the submodules (``media.fetch``, ``media.probe``, ``media.demux``, ``media.errors``): the
package deliberately re-exports nothing, because a function ``fetch`` re-exported here would shadow the
module ``media.fetch`` (same for ``probe`` and ``demux``) and break ``import … as`` and monkeypatching.
"""
