"""The probe inside MD engines: the ASE calculator, the dynamics watchdog and LAMMPS."""
