"""Data files shipped with pyomni (read them with :mod:`importlib.resources`).

* ``cn_cities.csv`` -- 2,106 mainland Chinese cities of at least 15,000 people,
  largest first, from GeoNames (CC BY 4.0) with province and prefecture codes
  from cpca (MIT). :mod:`pyomni.demo` builds its demo network on it.
* ``cn_basemap.json`` -- China's provinces and the neighbouring land for the
  simulation's maps (:mod:`pyomni.sim.basemap`), from Natural Earth (public
  domain), simplified by ``make_basemap.py`` (a maintainer's script).
"""
