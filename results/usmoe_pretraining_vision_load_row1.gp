set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row1.png.tmp.20991'
$m << EOD
0.119301 0.157698 0.121186 0.134283 0.140878 0.132652 0.122978 0.0710248
0.102619 0.145565 0.127642 0.13665 0.115395 0.101746 0.138764 0.131618
EOD
set title "Token choice, k=2: load (last epoch, first seed)"
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
