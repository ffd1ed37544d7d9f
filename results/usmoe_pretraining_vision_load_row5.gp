set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row5.png.tmp.20991'
$m << EOD
0.122025 0.114062 0.103936 0.130288 0.151623 0.105048 0.122175 0.150841
0.117788 0.169411 0.112049 0.119171 0.11884 0.0990986 0.138431 0.12521
EOD
set title "USMoE, k=1.5: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
